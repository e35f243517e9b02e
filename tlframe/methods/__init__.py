"""Transfer methods: one LightningModule each, sharing ``TransferModule``."""
