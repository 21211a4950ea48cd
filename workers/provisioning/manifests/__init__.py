"""Pure builders: frozen spec in, list of dicts out, in apply order. No Django, no portal, no kubernetes."""
