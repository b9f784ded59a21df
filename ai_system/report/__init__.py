"""Turn ``results/`` (pytest-benchmark JSON) into the site's results pages and plots."""
