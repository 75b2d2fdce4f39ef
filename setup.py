"""The compiled backend, built with the install: ``recurrence.c`` (which includes the templates
``cells.c`` and ``threaded.c`` once per element type) once per instruction set, each an optional
extension, so that a machine without a C compiler, or one whose compiler cannot target an
instruction set, still installs (and runs the readable reference). ``bptt.kernels.library``
picks, at run time, the best variant this CPU supports. The files are plain shared libraries
that ``ctypes`` loads; no compiler runs after the install.
"""

from setuptools import Extension, setup

SOURCE = "src/bptt/kernels/recurrence.c"
DEPENDS = ("cells.c", "threaded.c", "contract.h")  # what SOURCE includes
# -ffp-contract=fast: GCC fuses a * b + c into one FMA only when told to in ISO C mode (clang
# does by default); the tile's products and the activations' polynomials are chains of them.
# -mtune=native schedules for the CPU that installs, without using its instructions: each variant
# still runs on any CPU with its instruction set (LSTM f32 inference 9.5 -> 8.1 ms, B = 1 3.2-3.6
# -> 2.7-3.0 ms on Zen 5, A/B in one hour)
COMMON = ["-O3", "-mtune=native", "-ffp-contract=fast", "-fno-trapping-math", "-fopenmp-simd", "-std=c11", "-pthread"]
VARIANTS = {  # best first; x86-64-v4 is AVX-512 (F, BW, CD, DQ, VL), v3 AVX2 with FMA
    "avx512": ["-march=x86-64-v4"],
    "avx2": ["-march=x86-64-v3"],
    "portable": [],
}

setup(
    ext_modules=[
        Extension(f"bptt.kernels._kernels_{name}", sources=[SOURCE], depends=[f"src/bptt/kernels/{part}" for part in DEPENDS],
                  extra_compile_args=COMMON + flags, extra_link_args=["-pthread"], optional=True)
        for name, flags in VARIANTS.items()
    ],
)
