"""The lab's Hydra launchers, where Hydra accepts launchers: in the `hydra_plugins` package.
Their code lives in `pipeline`; a launcher class must be defined here to be found."""
