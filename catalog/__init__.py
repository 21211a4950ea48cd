"""The model catalog: models, versions, serving profiles, effective-dated prices."""
