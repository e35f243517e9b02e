"""Domains (data sets with splits and classes) and the module that pairs them."""
