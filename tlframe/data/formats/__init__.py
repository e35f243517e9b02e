"""Domains read from the user's files: feature arrays and image folders."""
