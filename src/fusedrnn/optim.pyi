# `fusedrnn.optim` is `fusedrnn.nn.optim` (the package registers that module under this path)
from .nn.optim import *  # noqa: F401,F403
