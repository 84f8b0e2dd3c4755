"""TIMIT recipe: synthetic corpus, manifests, front end + BiLSTM-CTC training, PER. See README "TIMIT recipe"."""
