"""Transfer methods: one module each, registering its builder with ``@method``.

Every module in this package is imported by ``tlframe.engine.method.load_methods``, so a
new method is one file here (see README, "Adding a method").
"""
