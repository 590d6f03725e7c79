"""The dashboard's web app: pages, JSON API, auth. The only dashboard package that imports the web framework."""
