"""The orders and stock tables, and 10 tea in stock."""

from django.db import migrations, models


def stock_the_shop(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("orders", "Stock").objects.create(item="tea", available=10)


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="Order",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("item", models.CharField(max_length=50)),
                ("quantity", models.PositiveIntegerField()),
                ("status", models.CharField(choices=[("new", "New"), ("shipped", "Shipped")], default="new",
                                            max_length=10)),
                ("shipped_at", models.DateTimeField(null=True)),
            ],
        ),
        migrations.CreateModel(
            name="Stock",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("item", models.CharField(max_length=50, unique=True)),
                ("available", models.PositiveIntegerField()),
            ],
        ),
        migrations.RunPython(stock_the_shop, migrations.RunPython.noop),
    ]
