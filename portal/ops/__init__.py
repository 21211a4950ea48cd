"""Operational commands (`make demo`, secret rotation, token issue): the top of the house, allowed to compose every app."""
