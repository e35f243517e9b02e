"""The embedded domains, built offline from data the installed packages ship."""
