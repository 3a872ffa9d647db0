"""Pure functions: a resolved policy in, plain manifest dicts out. No clock, no env, no client."""
