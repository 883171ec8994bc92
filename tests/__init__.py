"""The iocpsvc test suite (twisted.trial test cases; also runs under pytest)."""

from hypothesis import HealthCheck, settings

# The property tests run twice, as a test case and as its pure-Python twin
# (tests.helpers.bothImplementations): two executors of one test function,
# on purpose.
settings.register_profile("iocpsvc", suppress_health_check=[HealthCheck.differing_executors])
settings.load_profile("iocpsvc")
