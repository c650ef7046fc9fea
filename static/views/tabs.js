// The tabs beside the call: one view open at a time, (re)loaded from the server each time it opens,
// so a call that just ended shows up in History and Usage without reloading the page.
import { startHistory } from "/static/views/history.js";
import { startPreferences } from "/static/views/preferences.js";
import { startUsage } from "/static/views/usage.js";

export function startViews() {
  const views = {
    preferences: startPreferences(),
    history: startHistory(),
    usage: startUsage(),
  };
  const tabs = [...document.querySelectorAll(".tabs [role=tab]")];
  let current = null;

  function open(name) {
    current = name;
    for (const tab of tabs) {
      const selected = tab.id === `tab-${name}`;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      document.getElementById(tab.getAttribute("aria-controls")).hidden = !selected;
    }
    views[name].refresh();
  }

  for (const tab of tabs) {
    tab.addEventListener("click", () => open(tab.id.replace("tab-", "")));
  }
  // The call tells us when it ends: the open view may now be out of date.
  document.addEventListener("voicecall:ended", () => { if (current !== "preferences") views[current].refresh(); });
  open("preferences");
  window.voiceViews = { open };  // for tests and the console
}
