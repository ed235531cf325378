"""Focus-DETR for MindSpore.

Importing the package applies the CPU start-up fix before MindSpore runs its first
convolution (see ``src.runtime``).
"""
from .runtime import apply_cpu_isa_fix, silence_cell_del_at_exit

apply_cpu_isa_fix()
silence_cell_del_at_exit()
