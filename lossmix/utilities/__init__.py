"""Leaves every layer may use: checks, collectives, private-API doors, random streams."""
