# %% [markdown]
# # etem-tracker in a notebook: one image, then a movie
#
# Runs as a plain script or cell by cell (the `# %%` markers) in Jupyter or VS Code.
# It makes its own data, so it needs nothing but the installed package.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from etem.simulate.toy import make_movie
from etem.tracker import find, track
from etem.tracker.evaluate import score_columns

movie = make_movie(n_frames=30, shape=(192, 192), particle_radius_A=12.0, seed=1)
image = movie.frames[0]

# %% [markdown]
# ## One image: columns as a DataFrame, with the trust flag and the sampling

# %%
cols = find(image, sampling=movie.sampling)
print(cols.head())
print(cols.attrs["frames"][0])  # SNR, dose, resolution, confidence, in_range
score = score_columns(cols, movie.truth.positions[movie.truth.positions["frame"] == 0], radius_px=5,
                      sampling=movie.sampling)
print(f"F1 {score['f1']:.3f}, position RMS {score['rms_A']:.3f} Å")

# %% [markdown]
# ## A movie: linked columns, sites, occupancy and event maps

# %%
res = track(movie.frames, sampling=movie.sampling)
print(res.sites[["site", "y", "x", "occupancy", "event_rate"]].head())

fig, ax = plt.subplots(1, 3, figsize=(13, 4.5))
ax[0].imshow(image, cmap="gray")
ax[0].plot(cols["x"], cols["y"], "r+", ms=5)
ax[0].set_title(f"frame 0: {len(cols)} columns")
ax[1].imshow(res.occupancy_map, cmap="viridis", vmin=0, vmax=1)
ax[1].set_title("occupancy")
ax[2].imshow(res.event_map, cmap="magma")
ax[2].set_title("events")
for a in ax:
    a.set_axis_off()
fig.tight_layout()
fig.savefig("notebook.png", dpi=80)
print("picture: notebook.png")
