"""A product catalogue with stock, and orders placed against it."""

from __future__ import annotations

from django.db import models


class Product(models.Model):
    name = models.CharField(max_length=200, unique=True)
    price_cents = models.PositiveIntegerField()
    stock = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("id",)

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "price_cents": self.price_cents,
            "stock": self.stock,
            "updated_at": self.updated_at.isoformat(),
        }


class Order(models.Model):
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="orders")
    quantity = models.PositiveIntegerField()
    total_cents = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "product": self.product_id,
            "quantity": self.quantity,
            "total_cents": self.total_cents,
            "created_at": self.created_at.isoformat(),
        }
