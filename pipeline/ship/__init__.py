"""Device packages (no TensorFlow): a variant as the files a device project drops in: the
model, its C sources for TensorFlow Lite for Microcontrollers (`csource`), its I/O facts, a
LiteRT example and golden vectors (`package`), checked against the real tools in the tests.
`python -m pipeline.ship VARIANT` (make export VARIANT=...) packages any variant of the last
run.
"""
