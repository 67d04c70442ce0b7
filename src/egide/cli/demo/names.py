"""Name and place lists for the synthetic demonstration clinic.

The lists were written by hand for Égide. They mix the given and family names one meets in a
French clinic's waiting room (French, Portuguese, Maghrebi, West African, Vietnamese, Italian,
Spanish, Polish, English, Turkish...), spelled with their real accents so that every layer of the
platform is exercised with non-ASCII text. Names are combined at random: any resemblance to a
real person is chance. Street names are invented combinations; cities and their postal codes are
real so that addresses look plausible and postal-code comparisons (family detection) make sense.
"""

from __future__ import annotations

MALE_GIVEN_NAMES: tuple[str, ...] = (
    # French, across generations
    "Lucas", "Hugo", "Louis", "Gabriel", "Raphaël", "Arthur", "Jules", "Adam", "Nathan", "Théo",
    "Noé", "Léo", "Mathis", "Timéo", "Éthan", "Baptiste", "Maxime", "Antoine", "Julien",
    "Nicolas", "Thomas", "Sébastien", "Jérôme", "François", "Stéphane", "Frédéric", "Olivier",
    "Philippe", "Pierre", "Jean", "Bernard", "Michel", "Gérard", "André", "René", "Joël", "Hervé",
    "Benoît", "Grégoire", "Loïc", "Yannick", "Côme",
    # Maghrebi
    "Mehdi", "Karim", "Youssef", "Rachid", "Samir", "Bilal", "Nabil", "Hamza", "Amine",
    "Mohamed", "Anis",
    # West African
    "Ibrahima", "Mamadou", "Moussa", "Ousmane", "Seydou", "Cheikh", "Abdoulaye", "Boubacar",
    # Portuguese, Italian, Spanish
    "João", "Tiago", "Gonçalo", "Rui", "Marco", "Giuseppe", "Matteo", "Alessandro", "Javier",
    "Andrés", "Álvaro", "Jesús",
    # Polish
    "Łukasz", "Paweł", "Wojciech", "Krzysztof",
    # Vietnamese
    "Minh", "Huy", "Quang", "Đức", "Thành",
    # English, Turkish
    "James", "Oliver", "Harry", "Liam", "Emre", "Mehmet",
)

FEMALE_GIVEN_NAMES: tuple[str, ...] = (
    # French, across generations
    "Emma", "Jade", "Louise", "Alice", "Chloé", "Léa", "Manon", "Inès", "Zoé", "Lina", "Mila",
    "Ambre", "Anaïs", "Clémence", "Maëlle", "Noémie", "Océane", "Élodie", "Camille", "Juliette",
    "Margaux", "Hélène", "Isabelle", "Nathalie", "Sylvie", "Valérie", "Véronique", "Françoise",
    "Monique", "Brigitte", "Geneviève", "Josiane", "Colette", "Gaëlle", "Solène", "Aurélie",
    "Céline", "Sandrine", "Salomé", "Bérénice",
    # Maghrebi
    "Fatima", "Amina", "Yasmina", "Samira", "Nadia", "Leïla", "Khadija", "Aïcha", "Soraya",
    # West African
    "Fatoumata", "Aminata", "Mariam", "Awa", "Kadiatou", "Ndèye", "Coumba",
    # Portuguese, Italian, Spanish
    "Maria", "Inês", "Beatriz", "Conceição", "Giulia", "Francesca", "Chiara", "Lucía", "Carmen",
    "Pilar", "Begoña",
    # Polish
    "Agnieszka", "Małgorzata", "Katarzyna", "Zofia",
    # Vietnamese
    "Thảo", "Linh", "Trang", "Hương", "Mai", "Ngọc",
    # English, Turkish
    "Sarah", "Emily", "Charlotte", "Olivia", "Elif", "Zeynep", "Ayşe",
)

FAMILY_NAMES: tuple[str, ...] = (
    # French
    "Martin", "Bernard", "Dubois", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
    "Simon", "Laurent", "Lefèvre", "Michel", "David", "Bertrand", "Roux", "Vincent", "Fournier",
    "Morel", "Girard", "André", "Mercier", "Dupont", "Lambert", "Bonnet", "François", "Legrand",
    "Garnier", "Faure", "Rousseau", "Blanc", "Guérin", "Henry", "Roussel", "Perrin", "Morin",
    "Mathieu", "Clément", "Gauthier", "Dumont", "Fontaine", "Chevalier", "Robin", "Masson",
    "Gérard", "Boyer", "Denis", "Lemaire", "Duval", "Joly", "Roche", "Noël", "Meunier",
    "Marchand", "Dufour", "Blanchard", "Barbier", "Brun", "Dumas", "Brunet", "Leroux", "Colin",
    "Renard", "Arnaud", "Rolland", "Caron", "Aubert", "Giraud", "Leclerc", "Vidal", "Bourgeois",
    "Renaud", "Lemoine", "Picard", "Gaillard", "Lacroix", "Fabre", "Dupuis", "Olivier", "Hubert",
    "Rivière", "Le Gall", "Guillaume", "Moulin", "Berger", "Lecomte", "Ménard", "Fleury",
    "Deschamps", "Carpentier", "Benoît", "Maillard", "Aubry", "Vasseur", "Le Roux", "Jacquet",
    "Prévost", "Poirier", "Charpentier", "Huet", "Dupuy", "Carré", "Breton", "Rémy", "Perrot",
    "Barré", "Marty", "Cousin", "Lebœuf", "Béranger", "Thévenet", "Desfossés", "Kerjean",
    # Portuguese
    "Da Silva", "Dos Santos", "Ferreira", "Pereira", "Oliveira", "Costa", "Rodrigues",
    "Gonçalves", "Fernandes", "Carvalho", "Sousa", "Ribeiro", "Magalhães", "Araújo",
    # Maghrebi
    "Benali", "Haddad", "Bouzid", "Belkacem", "Amrani", "Cherif", "Mansouri", "Khelifi", "Saïdi",
    "Brahimi", "Benmoussa", "El Idrissi", "Aït Ahmed", "Bensaïd", "Zeroual", "Boukhalfa",
    # West African
    "Diallo", "Traoré", "Koné", "Camara", "Diop", "N'Diaye", "Sow", "Keïta", "Coulibaly", "Touré",
    "Sylla", "Cissé", "Fofana", "Mbaye", "Sarr", "Gueye", "Ouédraogo", "Diarra",
    # Vietnamese
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ", "Đặng", "Bùi", "Đỗ", "Huỳnh",
    # Italian
    "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Greco",
    "De Luca", "Mancini", "Lombardi", "Moretti", "Santoro",
    # Spanish
    "García", "Martínez", "López", "Sánchez", "González", "Pérez", "Fernández", "Jiménez",
    "Hernández", "Díaz", "Muñoz", "Álvarez", "Navarro", "Ibáñez",
    # Polish
    "Nowak", "Wójcik", "Kowalczyk", "Woźniak", "Mazur", "Krawczyk", "Kaczmarek", "Zając",
    "Król", "Wieczorek",
    # English, German, Turkish, Armenian, Chinese
    "Smith", "Taylor", "Walker", "Hughes", "Clarke", "Müller", "Schneider", "Yılmaz", "Öztürk",
    "Şahin", "Çelik", "Petrossian", "Chen", "Zhang",
)

# (city, postal code): the demonstration clinic sits in Lyon, so most patients live nearby.
LOCAL_CITIES: tuple[tuple[str, str], ...] = (
    ("Lyon", "69001"), ("Lyon", "69003"), ("Lyon", "69004"), ("Lyon", "69006"),
    ("Lyon", "69007"), ("Lyon", "69008"), ("Lyon", "69009"), ("Villeurbanne", "69100"),
    ("Vénissieux", "69200"), ("Vaulx-en-Velin", "69120"), ("Bron", "69500"),
    ("Caluire-et-Cuire", "69300"), ("Saint-Priest", "69800"), ("Écully", "69130"),
    ("Oullins", "69600"), ("Rillieux-la-Pape", "69140"), ("Décines-Charpieu", "69150"),
    ("Villefranche-sur-Saône", "69400"), ("Meyzieu", "69330"), ("Givors", "69700"),
)

OTHER_CITIES: tuple[tuple[str, str], ...] = (
    ("Paris", "75011"), ("Paris", "75015"), ("Paris", "75018"), ("Marseille", "13005"),
    ("Toulouse", "31000"), ("Nice", "06000"), ("Nantes", "44000"), ("Strasbourg", "67000"),
    ("Montpellier", "34000"), ("Bordeaux", "33000"), ("Lille", "59000"), ("Rennes", "35000"),
    ("Saint-Étienne", "42000"), ("Grenoble", "38000"), ("Dijon", "21000"), ("Nîmes", "30000"),
    ("Clermont-Ferrand", "63000"), ("Annecy", "74000"), ("Chambéry", "73000"),
    ("Besançon", "25000"), ("Mâcon", "71000"), ("Valence", "26000"), ("Bourg-en-Bresse", "01000"),
    ("Aix-en-Provence", "13100"), ("Brest", "29200"), ("Orléans", "45000"), ("Tours", "37000"),
)

STREET_KINDS: tuple[str, ...] = (
    "rue", "rue", "rue", "avenue", "boulevard", "impasse", "allée", "chemin", "place", "cours",
    "quai", "montée",
)

STREET_NAMES: tuple[str, ...] = (
    "des Tisserands", "du Vieux-Moulin", "des Glycines", "des Capucines", "de la Source",
    "des Acacias", "du Belvédère", "des Mûriers", "de l'Orangerie", "des Trois-Ponts",
    "du Grand-Pré", "des Vergers", "de la Tuilerie", "des Hirondelles", "de la Verrerie",
    "du Clos-Fleuri", "des Lavandières", "des Cèdres", "du Pré-aux-Chênes", "des Bateliers",
    "de la Forge", "du Coteau", "des Jardins-d'Hiver", "de la Poterie", "des Peupliers",
    "des Érables", "du Moulin-à-Vent", "des Canuts-Bleus", "de la Croix-Verte", "des Soyeux",
    "du Puits-Doré", "des Mariniers", "de la Fontaine-Claire", "des Sablières", "du Bief",
    "des Quatre-Vents", "de l'Étang-Rond", "des Rosiers", "de la Garenne", "du Val-Fleuri",
)
