"""The feature catalogue of the synthetic longitudinal table: 769 regional measures.

Desikan–Killiany and Destrieux cortical regions (volume, area, thickness per hemisphere), subcortical
and midline volumes and small nuclei, each with its median at age 63.5, between-subject SD and annual
change on the log scale, and measurement noise. Constants here never depend on the user's seed.
Used by :mod:`neurodiff.data.synthetic_longitudinal`.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

# Feature catalogue: 379 features per hemisphere + 11 midline = 769.
_SYSTEM_CODES = {"F": "frontal", "P": "parietal", "T": "temporal", "M": "medial_temporal", "O": "occipital",
                 "C": "cingulate", "I": "insula"}
_DK = """bankssts T 1000 2.50|caudalanteriorcingulate C 650 2.60|caudalmiddlefrontal F 2300 2.55|cuneus O 1500 1.90|
entorhinal M 450 3.20|fusiform T 3300 2.70|inferiorparietal P 4800 2.45|inferiortemporal T 3200 2.75|
isthmuscingulate C 950 2.45|lateraloccipital O 4300 2.20|lateralorbitofrontal F 2500 2.60|lingual O 3000 2.00|
medialorbitofrontal F 1700 2.40|middletemporal T 3100 2.80|parahippocampal M 650 2.60|paracentral F 1400 2.40|
parsopercularis F 1500 2.50|parsorbitalis F 650 2.60|parstriangularis F 1250 2.40|pericalcarine O 1300 1.70|
postcentral P 4300 2.05|posteriorcingulate C 1050 2.50|precentral F 4700 2.50|precuneus P 3800 2.35|
rostralanteriorcingulate C 700 2.80|rostralmiddlefrontal F 5300 2.35|superiorfrontal F 7200 2.65|
superiorparietal P 5200 2.20|superiortemporal T 3500 2.75|supramarginal P 3900 2.50|frontalpole F 250 2.70|
temporalpole T 450 3.50|transversetemporal T 400 2.30|insula I 2100 2.90"""
_A2009S = """g_and_s_frontomargin F|g_and_s_occipital_inf O|g_and_s_paracentral F|g_and_s_subcentral P|
g_and_s_transv_frontopol F|g_and_s_cingul_ant C|g_and_s_cingul_mid_ant C|g_and_s_cingul_mid_post C|
g_cingul_post_dorsal C|g_cingul_post_ventral C|g_cuneus O|g_front_inf_opercular F|g_front_inf_orbital F|
g_front_inf_triangul F|g_front_middle F|g_front_sup F|g_ins_lg_and_s_cent_ins I|g_insular_short I|
g_occipital_middle O|g_occipital_sup O|g_oc_temp_lat_fusifor T|g_oc_temp_med_lingual O|g_oc_temp_med_parahip M|
g_orbital F|g_pariet_inf_angular P|g_pariet_inf_supramar P|g_parietal_sup P|g_postcentral P|g_precentral F|
g_precuneus P|g_rectus F|g_subcallosal F|g_temp_sup_g_t_transv T|g_temp_sup_lateral T|g_temp_sup_plan_polar T|
g_temp_sup_plan_tempo T|g_temporal_inf T|g_temporal_middle T|lat_fis_ant_horizont I|lat_fis_ant_vertical I|
lat_fis_post I|pole_occipital O|pole_temporal T|s_calcarine O|s_central P|s_cingul_marginalis C|
s_circular_insula_ant I|s_circular_insula_inf I|s_circular_insula_sup I|s_collat_transv_ant M|
s_collat_transv_post O|s_front_inf F|s_front_middle F|s_front_sup F|s_interm_prim_jensen P|
s_intrapariet_and_p_trans P|s_oc_middle_and_lunatus O|s_oc_sup_and_transversal O|s_occipital_ant O|
s_oc_temp_lat T|s_oc_temp_med_and_lingual O|s_orbital_lateral F|s_orbital_med_olfact F|s_orbital_h_shaped F|
s_parieto_occipital P|s_pericallosal C|s_postcentral P|s_precentral_inf_part F|s_precentral_sup_part F|
s_suborbital F|s_subparietal P|s_temporal_inf T|s_temporal_sup T|s_temporal_transverse T"""
# region parcellation system median(mm³) sigma(log) annual-log-rate noise(log); '*' = midline
_VOLUMES = """thalamus aseg diencephalon 7400 .09 -.005 .025|caudate aseg basal_ganglia 3500 .11 -.004 .03|
putamen aseg basal_ganglia 4900 .10 -.005 .03|pallidum aseg basal_ganglia 2000 .11 -.004 .04|
hippocampus aseg medial_temporal 4000 .10 -.007 .025|amygdala aseg medial_temporal 1600 .11 -.006 .045|
accumbens aseg basal_ganglia 550 .15 -.006 .07|ventraldc aseg midbrain 4000 .09 -.003 .035|
cerebellum_cortex aseg cerebellum 52000 .09 -.004 .02|cerebellum_white_matter aseg cerebellum 14500 .11 -.003 .035|
cerebral_white_matter aseg white_matter 230000 .10 -.003 .015|lateral_ventricle aseg ventricles 14000 .45 .03 .04|
inf_lat_vent aseg ventricles 450 .50 .04 .15|choroid_plexus aseg ventricles 1000 .22 .01 .08|
*brainstem aseg brainstem 21000 .09 -.002 .015|*3rd_ventricle aseg ventricles 1200 .30 .025 .06|
*4th_ventricle aseg ventricles 1800 .25 .01 .06|*csf aseg ventricles 1100 .25 .02 .08|
*cc_posterior aseg white_matter 950 .14 -.004 .06|*cc_mid_posterior aseg white_matter 500 .16 -.004 .07|
*cc_central aseg white_matter 500 .16 -.004 .07|*cc_mid_anterior aseg white_matter 520 .16 -.004 .07|
*cc_anterior aseg white_matter 850 .14 -.004 .06|*wm_hypointensities aseg white_matter_lesions 1800 .90 .06 .20|
*etiv aseg head 1480000 .085 0 .015|
snc cit168 midbrain 160 .13 -.0045 .04|snr cit168 midbrain 250 .13 -.0045 .04|rn cit168 midbrain 190 .12 -.004 .06|
vta cit168 midbrain 80 .15 -.004 .08|pbp cit168 midbrain 120 .15 -.004 .08|stn cit168 midbrain 110 .14 -.004 .07|
gpe cit168 basal_ganglia 1300 .11 -.004 .05|gpi cit168 basal_ganglia 500 .12 -.004 .06|
vep cit168 basal_ganglia 300 .14 -.004 .07|exa cit168 basal_ganglia 350 .15 -.004 .08|
nbm cit168 basal_ganglia 150 .15 -.005 .08|hth cit168 diencephalon 700 .12 -.004 .06|
mn cit168 diencephalon 60 .16 -.005 .09|hn cit168 diencephalon 25 .18 -.004 .10|
hp_ca1 hipposf medial_temporal 650 .11 -.007 .04|hp_ca3 hipposf medial_temporal 220 .13 -.007 .06|
hp_ca4 hipposf medial_temporal 260 .12 -.007 .05|hp_gc_ml_dg hipposf medial_temporal 300 .12 -.007 .05|
hp_molecular_layer hipposf medial_temporal 580 .11 -.007 .04|hp_subiculum hipposf medial_temporal 430 .11 -.007 .05|
hp_presubiculum hipposf medial_temporal 300 .12 -.007 .05|hp_parasubiculum hipposf medial_temporal 60 .17 -.006 .09|
hp_fimbria hipposf medial_temporal 80 .20 -.008 .10|hp_hata hipposf medial_temporal 60 .16 -.007 .09|
hp_tail hipposf medial_temporal 520 .13 -.006 .06|hp_fissure hipposf medial_temporal 150 .25 .015 .10|
am_lateral amygsf medial_temporal 650 .12 -.006 .05|am_basal amygsf medial_temporal 450 .12 -.006 .05|
am_accessory_basal amygsf medial_temporal 270 .13 -.006 .06|
am_anterior_amygdaloid_area amygsf medial_temporal 55 .16 -.006 .09|am_central amygsf medial_temporal 45 .18 -.006 .10|
am_medial amygsf medial_temporal 25 .20 -.006 .11|am_cortical amygsf medial_temporal 27 .19 -.006 .11|
am_corticoamygdaloid_transition amygsf medial_temporal 170 .14 -.006 .07|
am_paralaminar amygsf medial_temporal 50 .16 -.006 .09|
th_anteroventral thalsf diencephalon 140 .14 -.005 .07|th_mediodorsal thalsf diencephalon 1100 .11 -.005 .04|
th_pulvinar thalsf diencephalon 1800 .11 -.005 .04|th_lgn thalsf diencephalon 230 .14 -.004 .07|
th_mgn thalsf diencephalon 140 .15 -.004 .08|th_ventral_lateral thalsf diencephalon 650 .12 -.005 .05"""
_THICK_RATE = {"frontal": -0.0035, "parietal": -0.0035, "temporal": -0.0045, "medial_temporal": -0.006,
               "occipital": -0.0025, "cingulate": -0.003, "insula": -0.004}
_SYSTEMS = ("frontal", "parietal", "temporal", "medial_temporal", "occipital", "cingulate", "insula",
            "basal_ganglia", "diencephalon", "midbrain", "brainstem", "cerebellum", "white_matter",
            "white_matter_lesions", "ventricles", "head")
# Always kept first when fewer features are asked for (the first 8 are the minimum).
_PRIORITY = ("vol_etiv", "vol_wm_hypointensities", "vol_lh_snc", "vol_rh_snc", "vol_lh_snr", "vol_rh_snr",
             "vol_lh_hippocampus", "vol_rh_hippocampus", "vol_lh_lateral_ventricle", "vol_rh_lateral_ventricle",
             "vol_lh_amygdala", "vol_rh_amygdala", "vol_lh_thalamus", "vol_rh_thalamus", "vol_lh_putamen",
             "vol_rh_putamen", "vol_lh_caudate", "vol_rh_caudate", "vol_lh_pallidum", "vol_rh_pallidum")
MIN_FEATURES = 8


def _items(table: str) -> list[list[str]]:
    return [item.split() for item in table.replace("\n", "").split("|")]


def _name_rng(name: str) -> np.random.Generator:
    """A generator seeded by a name: catalogue constants never depend on the user's seed."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def _row(name: str, measure: str, hemi: str, region: str, parc: str, system: str, kind: str,
         median: float, sigma: float, rate: float, noise: float, derived: bool = False) -> dict[str, Any]:
    unit = {"vol": "mm3", "area": "mm2", "thick": "mm"}[measure]
    return dict(name=name, measure=measure, hemisphere=hemi, region=region, parcellation=parc, system=system,
                kind=kind, unit=unit, median=median, sigma_log=sigma, annual_log_rate=rate, noise_sd_log=noise,
                derived=derived)


def _volume_rows() -> list[dict[str, Any]]:
    rows = []
    for region, parc, system, median, sigma, rate, noise in _items(_VOLUMES):
        midline = region.startswith("*")
        region = region.lstrip("*")
        kind = "etiv" if region == "etiv" else ("csf" if float(rate) > 0 else "tissue")
        for hemi in ("",) if midline else ("lh", "rh"):
            name = f"vol_{hemi}_{region}" if hemi else f"vol_{region}"
            jit = _name_rng(name).normal(size=3)
            rows.append(_row(name, "vol", hemi, region, parc, system, kind, float(median) * np.exp(0.02 * jit[0]),
                             float(sigma) * np.exp(0.05 * jit[1]), float(rate), float(noise) * np.exp(0.1 * jit[2])))
    return rows


def _cortical_regions() -> list[tuple[str, str, str, float, float]]:
    regions = [("dk", r, _SYSTEM_CODES[s], float(a), float(t)) for r, s, a, t in _items(_DK)]
    for region, code in _items(_A2009S):
        u = _name_rng(region).random(2)
        gyrus = not region.startswith("s_")
        area = (800 + 2700 * u[0]) if gyrus else (300 + 2200 * u[0])
        thick = (2.4 + 0.6 * u[1]) if gyrus else (1.9 + 0.6 * u[1])
        regions.append(("a2009s", f"a2009s_{region}", _SYSTEM_CODES[code], area, thick))
    return regions


def _cortical_rows() -> list[dict[str, Any]]:
    rows = []
    for parc in ("dk", "a2009s"):
        regions = [r for r in _cortical_regions() if r[0] == parc]
        for measure in ("vol", "area", "thick"):
            for hemi in ("lh", "rh"):
                for _, region, system, area, thick in regions:
                    name = f"{measure}_{hemi}_{region}"
                    jit = _name_rng(name).normal(size=3)
                    small = (2000.0 / area) ** 0.3
                    asym = np.exp(0.03 * _name_rng(f"{hemi}{region}").normal())
                    if measure == "vol":
                        rows.append(_row(name, "vol", hemi, region, parc, system, "vol_cortical",
                                         1.1 * area * thick * asym, 0.03, 0.0,
                                         float(np.clip(0.03 * small, 0.015, 0.06)), derived=True))
                        continue
                    sigma = 0.11 if measure == "area" else (0.09 if system == "medial_temporal" else 0.07)
                    rate = (-0.002 if system == "medial_temporal" else -0.0015) if measure == "area" \
                        else _THICK_RATE[system]
                    median = area * asym if measure == "area" else thick * np.exp(0.02 * jit[0])
                    rows.append(_row(name, measure, hemi, region, parc, system, measure, median,
                                     sigma * np.exp(0.1 * jit[1]), rate,
                                     float(np.clip(0.025 * small * np.exp(0.1 * jit[2]), 0.015, 0.045))))
    return rows


@functools.lru_cache(maxsize=1)
def _catalogue() -> pd.DataFrame:
    cat = pd.DataFrame(_volume_rows() + _cortical_rows())
    cat["expanding"] = cat["annual_log_rate"] > 0
    return cat


def feature_catalogue(n_features: int = 769) -> pd.DataFrame:
    """One row per feature of an `n_features` table: name, measure, hemisphere, region, system, unit,
    median at age 63.5, between-subject SD and annual change (log scale), measurement-noise SD."""
    cat = _catalogue()
    return cat.iloc[_selected(n_features)].reset_index(drop=True).copy()


def _selected(n_features: int) -> np.ndarray:
    """Catalogue positions of the first `n_features` by priority, returned in catalogue order."""
    names = _catalogue()["name"].tolist()
    index = {n: i for i, n in enumerate(names)}
    dk = [i for i, n in enumerate(names) if _catalogue()["parcellation"].iat[i] == "dk"]
    dk_by_region = sorted(dk, key=lambda i: (names[i].split("_", 2)[2], i))
    order = [index[n] for n in _PRIORITY] + dk_by_region + list(range(len(names)))
    seen: dict[int, None] = dict.fromkeys(order)  # keeps first occurrence, in order
    return np.sort(np.fromiter(seen, dtype=int)[:n_features])


def _selector_mask(cat: pd.DataFrame, sel: Mapping[str, Any]) -> np.ndarray:
    own = ~cat["derived"].to_numpy() & (cat["kind"] != "etiv").to_numpy()
    if "exclude_systems" in sel:
        return own & ~cat["system"].isin(sel["exclude_systems"]).to_numpy()
    hit = np.zeros(len(cat), bool)
    if "regions" in sel:
        hit |= cat["region"].isin(sel["regions"]).to_numpy()
    if "systems" in sel:
        hit |= cat["system"].isin(sel["systems"]).to_numpy()
    if "prefix" in sel:
        hit |= cat["region"].str.startswith(sel["prefix"]).to_numpy()
    if "measure" in sel:
        hit |= (cat["measure"] == sel["measure"]).to_numpy()
    if "hemi" in sel:
        hit &= (cat["hemisphere"] == sel["hemi"]).to_numpy()
    return own & hit
