"""The JVM options of `spark.java_options` are the ones the driver runs with.

Spark's launcher adds `-XX:+IgnoreUnrecognizedVMOptions`, so a misspelt flag would be dropped
without a word: the running JVM is asked for the values it took."""

from __future__ import annotations

# Java 17's own C2 thresholds, and the ones the settings ask for (ten times, minimum ~33 times).
JAVA_DEFAULTS = {
    "Tier4InvocationThreshold": "5000",
    "Tier4MinInvocationThreshold": "600",
    "Tier4CompileThreshold": "15000",
    "Tier4BackEdgeThreshold": "40000",
}
EXPECTED = {
    "Tier4InvocationThreshold": "50000",
    "Tier4MinInvocationThreshold": "20000",
    "Tier4CompileThreshold": "60000",
    "Tier4BackEdgeThreshold": "400000",
    "UseParallelGC": "true",
}


def test_the_driver_runs_with_the_default_java_options(spark):
    management = spark._jvm.java.lang.management.ManagementFactory
    diagnostic = management.getPlatformMXBean(spark._jvm.com.sun.management.HotSpotDiagnosticMXBean._java_lang_class)
    taken = {name: diagnostic.getVMOption(name).getValue() for name in EXPECTED}
    assert taken == EXPECTED
    assert all(taken[name] != value for name, value in JAVA_DEFAULTS.items())
