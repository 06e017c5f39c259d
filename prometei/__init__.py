"""prometei: amoCRM leads into Rukovoditel through durable Inngest functions."""

__version__ = "0.1.0"
