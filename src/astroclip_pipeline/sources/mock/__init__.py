"""The embedded mock survey: DESI-like spectra and Legacy-Survey-like cutouts of simulated galaxies.

``population`` draws the galaxies of a flux-limited survey, ``templates`` holds the kcorrect SED
basis and its photometry, ``spectra`` and ``images`` observe them as DESI and the Legacy Survey
would, and ``survey`` writes the raw shards that the real downloads write too.
"""
