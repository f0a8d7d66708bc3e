"""What runs during a fit: the LightningModule, its schedule, scores, callbacks and loggers,
stopping on a signal, and the devices and processes it runs on."""
