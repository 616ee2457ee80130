"""Errors that the CLI turns into one clear line instead of a traceback."""


class ConfigurationError(ValueError):
    """A configuration value is wrong: an unknown name, a bad combination of options."""


def unknown_choice(
    kind: str, name: str, choices: list[str] | tuple[str, ...]
) -> ConfigurationError:
    """Build the error for a name that is not in a registry, listing the valid ones."""
    valid = ", ".join(sorted(choices))
    return ConfigurationError(f"unknown {kind} {name!r}; valid choices for {kind}: {valid}")
