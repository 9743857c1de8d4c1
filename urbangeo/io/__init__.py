"""Input/output: GeoPackage conventions and run folders."""
