"""The dashboard's unit specifications."""
