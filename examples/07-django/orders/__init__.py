"""Orders of the example shop: a view places one, a task ships it."""
