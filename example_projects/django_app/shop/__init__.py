"""The example shop: products with stock, and orders that take from it."""
