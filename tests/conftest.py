pytest_plugins = ["cellwork.testing.pytest_plugin"]
