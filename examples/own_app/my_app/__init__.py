"""A user's own project: a model and a datamodule that know nothing of lossmix's demos."""
