"""Fact tables the embedded deception QA corpus is written from (by the mup team).

Clean questions are about invented people, towns, companies, events and books, so the
answer can only come from the context (reading comprehension, not world knowledge).
Fruit questions are about real fruits; their contexts state the facts used.
"""

PEOPLE = [
    # name, job, city, hobby, pet, years in job
    ("Marta Ilves", "ferry pilot", "Tallinn", "birdwatching", "a grey parrot", 12),
    ("Jonah Okafor", "bridge inspector", "Lagos", "chess", "a tortoise", 7),
    ("Priya Raman", "bakery owner", "Pune", "kite flying", "two cats", 9),
    ("Tomasz Wrona", "orchestra tuner", "Gdansk", "rowing", "a beagle", 15),
    ("Ines Carvalho", "lighthouse keeper", "Porto", "pottery", "a goat", 4),
    ("Kenji Mori", "train dispatcher", "Sendai", "calligraphy", "a goldfish", 21),
    ("Aisha Bello", "forest ranger", "Kano", "football", "a falcon", 6),
    ("Lukas Brenner", "glassblower", "Graz", "rock climbing", "a hamster", 11),
    ("Sofia Lindqvist", "ice-road trucker", "Kiruna", "knitting", "a husky", 8),
    ("Diego Ferreyra", "tango teacher", "Rosario", "astronomy", "a rabbit", 14),
    ("Hana Novak", "museum restorer", "Brno", "fencing", "a cockatiel", 5),
    ("Omar Haddad", "date farmer", "Jericho", "poetry", "a donkey", 30),
    ("Greta Holm", "wind-turbine technician", "Esbjerg", "sailing", "a labrador", 3),
    ("Ravi Menon", "tea taster", "Kochi", "cricket", "a mynah bird", 18),
    ("Elena Petrova", "radio host", "Varna", "swimming", "a ferret", 10),
    ("Samuel Mensah", "beekeeper", "Kumasi", "drumming", "a tortoiseshell cat", 13),
    ("Yuki Tanabe", "puppet maker", "Nara", "cycling", "a shiba inu", 9),
    ("Clara Moreau", "cheese maker", "Annecy", "skiing", "a sheepdog", 16),
    ("Bruno Costa", "surf instructor", "Florianopolis", "photography", "an iguana", 5),
    ("Nadia Karim", "air-traffic controller", "Muscat", "embroidery", "a canary", 12),
    ("Felix Aalto", "sauna builder", "Tampere", "ice fishing", "a spitz", 20),
    ("Lucia Romano", "violin maker", "Cremona", "gardening", "a tabby cat", 25),
    ("Arjun Desai", "ship welder", "Surat", "table tennis", "a pigeon", 8),
    ("Mei Lin", "subway engineer", "Taipei", "karaoke", "a turtle", 6),
]

TOWNS = [
    # name, river, population, festival month, main industry
    ("Vellmar Ridge", "the Osk", 4200, "March", "slate quarrying"),
    ("Brackwater", "the Lune", 12800, "July", "boat building"),
    ("Tiroca", "the Amel", 950, "October", "olive oil"),
    ("Saint Orrin", "the Petch", 30500, "May", "textiles"),
    ("Kellhaven", "the Brisk", 7600, "December", "fishing"),
    ("Dunmore Falls", "the Cale", 2100, "August", "paper milling"),
    ("Ostrava Nova", "the Vlt", 18400, "June", "steelworks"),
    ("Pell Crossing", "the Harrow", 560, "September", "sheep farming"),
    ("Marisol", "the Seco", 9900, "April", "salt pans"),
    ("Glenarrow", "the Dree", 3300, "November", "whisky distilling"),
    ("Hallow Bay", "the Merrin", 15100, "February", "tourism"),
    ("Quillon", "the Tarn", 6700, "January", "clockmaking"),
    ("Rudberg", "the Ems", 22000, "July", "brewing"),
    ("Ashcombe", "the Fennel", 1400, "May", "lavender growing"),
    ("Isola Verde", "the Piave", 8100, "August", "glassworks"),
    ("Norvik", "the Jarl", 5200, "March", "fish smoking"),
]

COMPANIES = [
    # name, product, founder, founded, headquarters
    ("Lumen Ferries", "electric passenger ferries", "Ada Kovacs", 2009, "Split"),
    ("Grainwell", "solar grain dryers", "Tobias Renner", 1996, "Winnipeg"),
    ("Copperleaf Labs", "hearing-aid batteries", "Nia Adeyemi", 2014, "Accra"),
    ("Northmoor Textiles", "wool blankets", "Ewan McLeod", 1971, "Inverness"),
    ("Stratos Kites", "cargo kites for ships", "Helene Dufour", 2011, "Brest"),
    ("Pebble & Pine", "wooden toys", "Rosa Jimenez", 2003, "Valencia"),
    ("Ardent Rail", "signalling software", "Viktor Lund", 1988, "Malmo"),
    ("Saffron Circuit", "water sensors", "Kabir Shah", 2017, "Jaipur"),
    ("Bluefin Optics", "underwater cameras", "Mara Okonkwo", 2006, "Durban"),
    ("Halden Forge", "kitchen knives", "Oskar Halden", 1954, "Solingen"),
    ("Quietwing", "silent ceiling fans", "Lea Fontaine", 2019, "Lyon"),
    ("Terraloom", "recycled carpets", "Dmitri Volkov", 1999, "Riga"),
    ("Marrow Bikes", "cargo bicycles", "Freya Nilsen", 2012, "Aarhus"),
    ("Kestrel Maps", "hiking maps", "Amir Tehrani", 1985, "Zurich"),
    ("Oriel Glass", "telescope lenses", "Beatrix Hall", 1962, "Bath"),
    ("Sunda Roasters", "coffee roasting machines", "Wayan Putra", 2008, "Denpasar"),
]

EVENTS = [
    # name, venue, weekday, attendees, winner
    ("the Harbour Regatta", "Kellhaven marina", "Saturday", 3400, "the crew of the Swift"),
    ("the Winter Chess Open", "the old tram depot", "Sunday", 280, "a twelve-year-old named Pia"),
    ("the Lantern Parade", "the cathedral square", "Friday", 9000, "the bakers' guild float"),
    ("the Goat Cheese Fair", "the market hall", "Thursday", 1200, "a farm from Tiroca"),
    ("the Robot Sumo Cup", "the university gym", "Wednesday", 650, "team Copperbot"),
    ("the Hill Climb", "the quarry road", "Saturday", 1800, "a retired postman"),
    ("the Poetry Slam", "the riverside library", "Tuesday", 150, "a nurse named Odile"),
    ("the Kite Festival", "the dunes north of town", "Sunday", 5200, "a kite shaped like a whale"),
    ("the Choir Contest", "the concert barn", "Monday", 700, "the miners' choir"),
    ("the Pumpkin Weigh-off", "the fire station yard", "Saturday", 2300, "a 540 kg pumpkin"),
    ("the Sandcastle Race", "the south beach", "Friday", 900, "two sisters from Brackwater"),
    ("the Night Marathon", "the ring road", "Saturday", 4100, "a runner from Norvik"),
]

BOOKS = [
    # title, author, year, setting, main character
    ("The Salt Clock", "Irena Volk", 1987, "a lighthouse", "a deaf clockmaker"),
    ("Orchard of Wires", "Tade Bello", 2012, "a desert town", "a retired electrician"),
    ("Nine Winters", "Halla Sigurd", 1995, "a fishing village", "a widowed ferrywoman"),
    ("The Paper Orchestra", "Luis Arce", 2004, "Buenos Aires", "a boy who folds instruments"),
    ("Glass Harbour", "Mina Cho", 2018, "a floating market", "a smuggler's daughter"),
    ("A Map for Moles", "Pieter Haas", 1979, "an underground city", "a cartographer mole"),
    ("Ten Quiet Bridges", "Amara Diallo", 2009, "a river delta", "a bridge engineer"),
    ("The Last Tram Home", "Oskar Brandt", 1968, "post-war Vienna", "a tram conductor"),
    ("Honey and Rust", "Selin Kaya", 2015, "an abandoned shipyard", "a beekeeper"),
    ("Snowline", "Mikael Rautio", 2001, "a mountain observatory", "an astronomer's cat"),
]

FRUITS = [
    # name, flesh colour, origin, season, plant, taste, notable fact
    ("mango", "orange-yellow", "South Asia", "summer", "tree", "sweet", "it is the national fruit of India"),
    ("pineapple", "yellow", "South America", "spring", "herbaceous plant", "sweet and tangy", "one plant usually bears a single fruit at a time"),
    ("kiwifruit", "green", "China", "winter", "vine", "tart", "its skin is covered in brown fuzz"),
    ("pomegranate", "ruby-red seeds", "Persia", "autumn", "shrub", "sweet-tart", "each fruit can hold hundreds of seeds"),
    ("papaya", "orange", "Central America", "all year", "tree", "mild and sweet", "its seeds taste peppery"),
    ("lychee", "translucent white", "southern China", "early summer", "tree", "floral and sweet", "its red shell is rough and bumpy"),
    ("dragon fruit", "white with black seeds", "Central America", "summer", "cactus", "mildly sweet", "its flowers open only at night"),
    ("durian", "pale yellow", "Borneo", "summer", "tree", "rich and custard-like", "its smell is banned in some hotels"),
    ("fig", "pink-purple", "the Mediterranean", "late summer", "tree", "honey-sweet", "it is pollinated by tiny wasps"),
    ("quince", "pale yellow", "the Caucasus", "autumn", "tree", "hard and astringent when raw", "it turns pink when cooked slowly"),
    ("persimmon", "orange", "China", "autumn", "tree", "sweet when fully ripe", "unripe ones make the mouth feel dry"),
    ("guava", "pink", "Central America", "winter", "tree", "sweet and musky", "it is rich in vitamin C"),
    ("passion fruit", "yellow pulp with black seeds", "South America", "summer", "vine", "tart and aromatic", "its skin wrinkles as it ripens"),
    ("blueberry", "pale green", "North America", "summer", "shrub", "sweet", "its skin has a powdery bloom"),
    ("cranberry", "white", "North America", "autumn", "low trailing vine", "very sour", "it is often harvested by flooding the bogs"),
    ("apricot", "orange", "Central Asia", "early summer", "tree", "sweet", "its kernel looks like an almond"),
    ("cherry", "dark red", "Western Asia", "early summer", "tree", "sweet or sour", "its stones are traditionally spat in contests"),
    ("watermelon", "red", "Africa", "summer", "vine", "sweet and watery", "it is about ninety percent water"),
    ("coconut", "white", "the tropical Pacific", "all year", "palm", "nutty", "it can float across oceans"),
    ("banana", "cream", "Southeast Asia", "all year", "large herbaceous plant", "sweet", "the plant is not a true tree"),
    ("lemon", "pale yellow", "South Asia", "winter", "tree", "sour", "its juice is about five percent citric acid"),
    ("grapefruit", "pink or white", "Barbados", "winter", "tree", "bitter-sweet", "it can interfere with some medicines"),
    ("avocado", "pale green", "Mexico", "all year", "tree", "buttery", "it ripens only after being picked"),
    ("olive", "green or black", "the Mediterranean", "autumn", "tree", "bitter when raw", "it must be cured before eating"),
    ("blackcurrant", "dark purple", "northern Europe", "summer", "shrub", "tart", "it was once banned in the United States"),
    ("jackfruit", "yellow", "South India", "summer", "tree", "sweet like banana and pineapple", "it is the largest fruit grown on a tree"),
    ("starfruit", "yellow", "Southeast Asia", "autumn", "tree", "sour-sweet", "its slices are shaped like stars"),
    ("rambutan", "white", "Malaysia", "summer", "tree", "sweet", "its red skin is covered in soft spines"),
    ("gooseberry", "green", "Europe", "early summer", "thorny shrub", "sour", "its skin shows pale stripes"),
    ("plum", "yellow or red", "China and Europe", "late summer", "tree", "sweet-tart", "dried plums are called prunes"),
    ("mangosteen", "white", "Indonesia", "summer", "tree", "sweet and tangy", "its thick purple rind stains clothes"),
    ("tamarind", "brown", "tropical Africa", "spring", "tree", "sour", "its pulp grows inside a brown pod"),
]
