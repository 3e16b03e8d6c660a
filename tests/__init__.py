"""The test suite: a package, so that tests import their shared helpers as `tests.helpers`."""
