"""The standard benchmark domains, through their real download or folder code."""
