"""reslab's Hydra configs, shipped in the package (as lightning-hydra-template does) so a
non-editable install finds them: `pkg://reslab.configs`."""
