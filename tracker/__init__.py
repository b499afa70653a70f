"""etem.tracker: follow atomic columns through in-situ TEM movies."""
