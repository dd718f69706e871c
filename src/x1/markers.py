"""The blueprint's step marker, in a leaf module so that every layer (data, training, config) can import it."""

EOIS = "<eois>"  # end of an intermediate step; the last step of a solution ends with the model's EOS instead
