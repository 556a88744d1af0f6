# `fusedrnn.checkpoint` is `fusedrnn.nn.checkpoint` (the package registers that module under this path)
from .nn.checkpoint import *  # noqa: F401,F403
