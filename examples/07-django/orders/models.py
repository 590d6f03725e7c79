"""An order, and the stock it is taken from."""

from django.db import models


class Stock(models.Model):
    item = models.CharField(max_length=50, unique=True)
    available = models.PositiveIntegerField()


class Order(models.Model):
    class Status(models.TextChoices):
        NEW = "new"
        SHIPPED = "shipped"

    item = models.CharField(max_length=50)
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NEW)
    shipped_at = models.DateTimeField(null=True)
