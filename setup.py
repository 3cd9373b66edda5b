"""Builds the Cython hot path; everything else is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("logfwd._fastparse", ["logfwd/_fastparse.pyx"], extra_compile_args=["-O3"]),
         # regex parsers: PCRE2 with its JIT (Debian: libpcre2-dev)
         Extension("logfwd._pcre", ["logfwd/_pcre.pyx"], extra_compile_args=["-O3"], libraries=["pcre2-8"])],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
