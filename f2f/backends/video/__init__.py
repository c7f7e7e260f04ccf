"""Video through diffusers: the image-to-video seam (`i2v`), its families, LoRAs, latent masks, speed-ups and split."""
