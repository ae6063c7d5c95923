// console.js: the entry point of every console page; it runs the module of
// the page named by <body data-page>.
import { boot } from './core.js';
import { signinPage, registerPage } from './auth.js';
import { overviewPage } from './overview.js';
import { keysPage } from './keys.js';
import { playgroundPage } from './playground.js';
import { usagePage } from './usage.js';
import { adminPage } from './admin.js';

const signedIn = { overview: overviewPage, keys: keysPage, playground: playgroundPage, usage: usagePage, admin: adminPage };

async function start() {
  const page = document.body.dataset.page;
  if (page === 'signin') return signinPage();
  if (page === 'register') return registerPage();
  const me = await boot();
  if (me && signedIn[page]) await signedIn[page](me);
  document.body.dataset.ready = 'true';
}

start();
