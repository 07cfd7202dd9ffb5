"""The Hydra front end: checks, trust, the runner, the report and the ``lossmix`` command."""
