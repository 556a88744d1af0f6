# `fusedrnn.train` is `fusedrnn.nn.train` (the package registers that module under this path)
from .nn.train import *  # noqa: F401,F403
