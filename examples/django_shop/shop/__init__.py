"""The shop app: landing, pricing, lead form, checkout → purchase."""
