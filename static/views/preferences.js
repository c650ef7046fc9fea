// Preferences: avatar, voice, quality and whether calls show the avatar; stored on the server
// (PUT /api/v1/users/me/preferences) so every device and every new call uses them.
import { api, el } from "/static/api.js";

const $ = (id) => document.getElementById(id);

function fillSelect(select, items, idKey, describe, defaultId) {
  const defaultItem = items.find((item) => item[idKey] === defaultId);
  select.replaceChildren(
    // null on the server: "whatever the server's default is", which may change later.
    el("option", { value: "" }, defaultItem ? `Default (${defaultItem.name})` : "Default"),
    ...items.map((item) => el("option", { value: item[idKey] }, describe(item))),
  );
}

function choose(select, value) {
  const wanted = value ?? "";
  if (![...select.options].some((option) => option.value === wanted)) {
    // Stored, but no longer offered: keep it visible rather than silently switching.
    select.append(el("option", { value: wanted }, `${wanted} (unavailable)`));
  }
  select.value = wanted;
}

export function startPreferences() {
  const form = $("prefs-form");
  const fields = {
    avatar: $("prefs-avatar"), voice: $("prefs-voice"), quality: $("prefs-quality"),
    enableAvatar: $("prefs-enable-avatar"), save: $("prefs-save"), status: $("prefs-status"),
  };
  let dirty = false;  // the person changed something not saved yet: a refresh must not undo it
  let loaded = false;

  function say(text, kind = "") {
    fields.status.textContent = text;
    fields.status.dataset.kind = kind;
  }

  function show(preferences, saved = true) {
    choose(fields.avatar, preferences.avatar_id);
    choose(fields.voice, preferences.voice_id);
    fields.quality.value = preferences.quality ?? "medium";
    // Until the user saves preferences the page's calls show the avatar (app.js): say so here too.
    fields.enableAvatar.checked = saved ? Boolean(preferences.enable_avatar) : true;
    dirty = false;
  }

  async function refresh() {
    if (dirty) return;
    if (!loaded) say("Loading…");
    try {
      const [me, avatars, voices] = await Promise.all([
        api("GET", "/api/v1/users/me"), api("GET", "/api/v1/avatars"), api("GET", "/api/v1/voices"),
      ]);
      fillSelect(fields.avatar, avatars.avatars, "avatar_id", (a) => a.name, avatars.default_avatar_id);
      fillSelect(fields.voice, voices.voices, "voice_id",
        (v) => (v.language ? `${v.name} (${v.language})` : v.name), voices.default_voice_id);
      show(me.preferences, me.preferences_saved);
      loaded = true;
      say("");
    } catch (error) {
      say(`Could not load preferences: ${error.message}`, "error");
    }
  }

  async function save(event) {
    event.preventDefault();
    fields.save.disabled = true;
    say("Saving…");
    try {
      const stored = await api("PUT", "/api/v1/users/me/preferences", {
        avatar_id: fields.avatar.value || null,
        voice_id: fields.voice.value || null,
        quality: fields.quality.value,
        enable_avatar: fields.enableAvatar.checked,
      });
      show(stored);
      say("Saved", "ok");
    } catch (error) {
      say(`Not saved: ${error.detail ?? error.message}`, "error");
    } finally {
      fields.save.disabled = false;
    }
  }

  form.addEventListener("input", () => { dirty = true; say(""); });
  form.addEventListener("submit", save);
  return { refresh };
}
