# `fusedrnn.quantized` is `fusedrnn.core.quantized` (the package registers that module under this path)
from .core.quantized import *  # noqa: F401,F403
