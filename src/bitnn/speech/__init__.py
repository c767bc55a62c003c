"""The speech path: spectra and their bits, Ideal Binary Masks, mixtures, the bitwise denoiser.

``spectra`` (STFT, frame features, masks), ``mixtures`` (reproducible noisy mixtures and their
manifests), ``denoise`` (:class:`~bitnn.speech.denoise.Denoiser`: a denoising BitNetwork run
on signals), ``metrics`` (SDR/SIR/SAR, STOI), ``protocol`` (the fixed train/test split of the
offline corpora) and ``training`` (needs PyTorch). Running a denoiser needs numpy, scipy and
soundfile, not PyTorch.
"""
