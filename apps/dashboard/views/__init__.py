"""Server-rendered dashboard pages: thin views that call the service functions."""
