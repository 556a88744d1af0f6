# `fusedrnn.losses` is `fusedrnn.nn.losses` (the package registers that module under this path)
from .nn.losses import *  # noqa: F401,F403
