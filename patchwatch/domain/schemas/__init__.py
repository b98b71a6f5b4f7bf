"""JSON Schemas of the report formats, shipped as package data."""
