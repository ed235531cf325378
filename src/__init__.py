"""Focus-DETR for MindSpore.

Importing the package applies the CPU start-up fix before MindSpore runs its first
convolution and the OpenMP wait policy of the fused CPU kernels (see ``src.runtime``): import
it before ``mindspore``.
"""
from .runtime import apply_cpu_isa_fix, apply_openmp_wait_policy, silence_cell_del_at_exit

apply_cpu_isa_fix()
apply_openmp_wait_policy()
silence_cell_del_at_exit()
