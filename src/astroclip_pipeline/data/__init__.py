"""From raw shards to the train/val/test dataset files, and the torch Dataset that reads them."""
