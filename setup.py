"""Builds the Cython hot path; everything else is in pyproject.toml.

``logfwd._fastparse`` holds the parsers and the file/stdout serializers; each output plugin's
kernel sits beside its plugin. What the serializers share is ``logfwd/_serial.pxd`` (cimported
by the modules below) and its implementation ``logfwd._serial``.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

_MODULES = {
    "logfwd._serial": "logfwd/_serial.pyx",
    "logfwd._fastparse": "logfwd/_fastparse.pyx",
    "logfwd.plugins._es._bulk": "logfwd/plugins/_es/_bulk.pyx",
    "logfwd.plugins.out_influxdb._lineproto": "logfwd/plugins/out_influxdb/_lineproto.pyx",
    "logfwd.plugins.out_kafka._kafka": "logfwd/plugins/out_kafka/_kafka.pyx",
    "logfwd.plugins.out_kafka._rdkafka": "logfwd/plugins/out_kafka/_rdkafka.pyx",
}

# Regex parsers, grep and multiline rules: PCRE2 with its JIT (Debian: libpcre2-dev).
_LIBRARIES = {"logfwd._pcre": ["pcre2-8"]}
_MODULES["logfwd._pcre"] = "logfwd/_pcre.pyx"

setup(
    ext_modules=cythonize(
        [Extension(name, [path], extra_compile_args=["-O3"], libraries=_LIBRARIES.get(name, []))
         for name, path in _MODULES.items()],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
